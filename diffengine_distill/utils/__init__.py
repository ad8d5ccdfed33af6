from .image import make_grid, save_image, to_uint8

__all__ = ["make_grid", "save_image", "to_uint8"]
