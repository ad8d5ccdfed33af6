"""EDM sigma-space solvers against a Gaussian toy with a closed-form ODE solution.

Data x0 ~ N(MU, S^2) per coordinate, so D(x; sigma) = MU + S^2 / (S^2 + sigma^2) (x - MU)
and the PF-ODE solution is x(sigma) = MU + (x(sigma0) - MU) sqrt(S^2 + sigma^2) / sqrt(S^2 + sigma0^2).
"""
import math

import pytest
import torch

from diffengine_distill.diffusion.solvers import (MAX_ORDER, SOLVERS, _dynamic_threshold,
                                                          check_solver, solve, solver_nfe)

MU, S = 0.3, 0.5
SIGMA_MAX, SIGMA_MIN = 10.0, 0.05


def gauss_denoise(x, sigma):
    return MU + S ** 2 / (S ** 2 + sigma ** 2) * (x - MU)


def exact(x_start, sigma0, sigma):
    return MU + (x_start - MU) * math.sqrt(S ** 2 + sigma ** 2) / math.sqrt(S ** 2 + sigma0 ** 2)


def edm_sigmas(n, rho=7.0, sigma_max=SIGMA_MAX, sigma_min=SIGMA_MIN):
    i = torch.arange(n, dtype=torch.float64)
    hi, lo = sigma_max ** (1 / rho), sigma_min ** (1 / rho)
    return (hi + i / (n - 1) * (lo - hi)) ** rho


@pytest.fixture(scope="module")
def noise():
    return torch.randn(4, 1, 4, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)


class Counter:
    """Wraps the toy denoiser, counting calls and recording what it was given."""

    def __init__(self, fn=gauss_denoise):
        self.fn, self.calls, self.sigmas = fn, 0, []

    def __call__(self, x, sigma):
        self.calls += 1
        self.sigmas.append(sigma)
        return self.fn(x, sigma)


def final_error(noise, solver, intervals, sigmas_fn, **kw):
    sigmas = sigmas_fn(intervals + 1)
    x = sigmas[0] * noise
    out = solve(gauss_denoise, x, sigmas, solver, **kw)[-1]
    return (out - exact(x, sigmas[0].item(), sigmas[-1].item())).abs().max().item()


def observed_orders(noise, solver, ks, sigmas_fn, **kw):
    errs = [final_error(noise, solver, k, sigmas_fn, **kw) for k in ks]
    return [math.log2(a / b) for a, b in zip(errs, errs[1:])], errs


POLY = edm_sigmas                       # rho = 7, sigma 10 -> 0.05


def UNIFORM(n):
    # iPNDM's Adams-Bashforth weights assume equal steps, hence a uniform grid.
    # It stops at 0.5 because the local error density of AB3/AB4 here changes
    # sign near sigma = S/2 and sigma = 0.87 S, which makes the error cancel
    # across the trajectory and the observed rates erratic; and it starts at 10
    # so that the Euler/AB2 warm-up steps (where the trajectory is almost
    # straight) stay below the main term at these step counts.
    return torch.linspace(SIGMA_MAX, 0.5, n, dtype=torch.float64)


RATE_CASES = [
    # (solver, kwargs, grid, intervals, expected order)
    ("euler", {}, POLY, (64, 128, 256), 1),
    ("heun", {}, POLY, (64, 128, 256), 2),
    ("dpm", {}, POLY, (64, 128, 256), 2),
    ("dpmpp", dict(max_order=1, lower_order_final=False), POLY, (64, 128, 256), 1),
    ("dpmpp", dict(max_order=2, lower_order_final=False), POLY, (64, 128, 256), 2),
    # The reference's 3rd-order multistep update weights its second-difference
    # term by half the Taylor coefficient (as DPM-Solver and diffusers do), so it
    # converges at order 2; see test_dpmpp_order3_beats_order2 as well.
    ("dpmpp", dict(max_order=3, lower_order_final=False), POLY, (64, 128, 256), 2),
    ("dpmpp", dict(max_order=1, lower_order_final=False, predict_x0=False), POLY, (64, 128, 256), 1),
    ("dpmpp", dict(max_order=2, lower_order_final=False, predict_x0=False), POLY, (64, 128, 256), 2),
    ("dpmpp", dict(max_order=3, lower_order_final=False, predict_x0=False), POLY, (64, 128, 256), 2),
    # lower_order_final makes the last interval first order (one O(h^2) local
    # error), so every max_order >= 2 ends up second order.
    ("dpmpp", dict(max_order=1, lower_order_final=True), POLY, (64, 128, 256), 1),
    ("dpmpp", dict(max_order=2, lower_order_final=True), POLY, (64, 128, 256), 2),
    ("dpmpp", dict(max_order=3, lower_order_final=True), POLY, (64, 128, 256), 2),
    ("ipndm", dict(max_order=1), UNIFORM, (128, 256, 512), 1),
    ("ipndm", dict(max_order=2), UNIFORM, (128, 256, 512), 2),
    ("ipndm", dict(max_order=3), UNIFORM, (128, 256, 512), 3),
    ("ipndm", dict(max_order=4), UNIFORM, (128, 256, 512), 4),
]


@pytest.mark.parametrize("solver,kw,grid,ks,expected", RATE_CASES,
                         ids=[f"{c[0]}-{'-'.join(f'{k}={v}' for k, v in c[1].items())}"
                              for c in RATE_CASES])
def test_convergence_order(noise, solver, kw, grid, ks, expected):
    rates, errs = observed_orders(noise, solver, ks, grid, **kw)
    assert all(abs(r - expected) < 0.3 for r in rates), (rates, errs)


def test_dpmpp_order3_beats_order2(noise):
    # Same asymptotic rate, but the extra history term must still pay off.
    for k in (16, 32, 64):
        e2 = final_error(noise, "dpmpp", k, POLY, max_order=2, lower_order_final=False)
        e3 = final_error(noise, "dpmpp", k, POLY, max_order=3, lower_order_final=False)
        assert e3 < 0.5 * e2, (k, e2, e3)


def test_trajectory_shape_and_start(noise):
    sigmas = edm_sigmas(6)
    x = sigmas[0] * noise
    for solver in SOLVERS:
        traj = solve(gauss_denoise, x, sigmas, solver)
        assert traj.shape == (6, *x.shape) and traj.dtype == x.dtype
        assert torch.equal(traj[0], x)
    assert solve(gauss_denoise, x, sigmas[:1]).shape == (1, *x.shape)


def test_denoiser_gets_0dim_sigmas_of_sigmas_dtype(noise):
    sigmas = edm_sigmas(5).float()
    x = sigmas[0].double() * noise            # the updates run in x's dtype
    for solver in SOLVERS:
        den = Counter()
        traj = solve(den, x, sigmas, solver)
        assert traj.dtype == torch.float64
        assert all(s.dim() == 0 and s.dtype == torch.float32 for s in den.sigmas)


AFS_KWARGS = [("euler", {}), ("dpmpp", {}), ("dpmpp", dict(predict_x0=False)),
              ("dpmpp", dict(thresholding=True)), ("ipndm", {}), ("ipndm", dict(max_order=1))]


@pytest.mark.parametrize("solver,kw", AFS_KWARGS)
def test_afs_first_interval_closed_form(noise, solver, kw):
    sigmas = edm_sigmas(5)
    x = sigmas[0] * noise
    den = Counter()
    traj = solve(den, x, sigmas, solver, afs=True, **kw)
    s0, s1 = sigmas[0], sigmas[1]
    torch.testing.assert_close(traj[1], x + (s1 - s0) * x / torch.sqrt(1 + s0 ** 2))
    assert den.calls == 3 and len(den.sigmas) == 3 and den.sigmas[0] == sigmas[1]


@pytest.mark.parametrize("solver", ["heun", "dpm"])
def test_afs_two_stage_solvers_still_call_corrector(noise, solver):
    sigmas = edm_sigmas(3)
    x = sigmas[0] * noise
    s0, s1 = sigmas[0], sigmas[1]
    d = x / torch.sqrt(1 + s0 ** 2)
    if solver == "heun":
        x_pred = x + (s1 - s0) * d
        expected = x + (s1 - s0) * 0.5 * (d + (x_pred - gauss_denoise(x_pred, s1)) / s1)
    else:
        s_mid = (s0 * s1).sqrt()
        x_mid = x + (s_mid - s0) * d
        expected = x + (s1 - s0) * (x_mid - gauss_denoise(x_mid, s_mid)) / s_mid
    den = Counter()
    traj = solve(den, x, sigmas, solver, afs=True)
    torch.testing.assert_close(traj[1], expected)
    assert den.calls == 3


@pytest.mark.parametrize("solver", SOLVERS)
@pytest.mark.parametrize("afs", [False, True])
@pytest.mark.parametrize("num_steps", [2, 3, 4, 7])
def test_solver_nfe_matches_counted_calls(noise, solver, afs, num_steps):
    sigmas = edm_sigmas(num_steps)
    den = Counter()
    solve(den, sigmas[0] * noise, sigmas, solver, afs=afs)
    assert den.calls == solver_nfe(solver, num_steps, afs)
    if afs:
        assert den.calls == solver_nfe(solver, num_steps) - 1
    per_interval = 2 if solver in ("heun", "dpm") else 1
    assert solver_nfe(solver, num_steps) == per_interval * (num_steps - 1)
    assert solver_nfe(solver, 1, afs) == 0


def _big_denoiser(x, sigma):
    # Sample 0 spans -3..5 (gets rescaled), sample 1 stays within [-0.5, 0.5]
    # (s = 1: left alone), sample 2 is within 1 except one outlier (clamped only).
    out = torch.empty_like(x)
    n = x[0].numel()
    out[0] = torch.linspace(-3, 5, n, dtype=x.dtype).reshape(x.shape[1:])
    out[1] = torch.linspace(-0.5, 0.5, n, dtype=x.dtype).reshape(x.shape[1:])
    out[2] = torch.linspace(-0.9, 0.9, n, dtype=x.dtype).reshape(x.shape[1:])
    out[2].view(-1)[-1] = 7.0
    return out


def test_thresholding_one_step_dpmpp():
    sigmas = torch.tensor([2.0, 1.0], dtype=torch.float64)
    # 256 values per sample, so a single outlier sits above the 99.5% quantile.
    x = sigmas[0] * torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(2),
                                dtype=torch.float64)
    raw = _big_denoiser(x, sigmas[0])
    s = torch.quantile(raw.abs().reshape(3, -1), 0.995, dim=1).clamp_min(1).reshape(3, 1, 1, 1)
    clamped = torch.maximum(torch.minimum(raw, s), -s) / s
    assert s[0] > 1 and s[1] == 1 and s[2] == 1 and clamped[2].max() == 1
    h = torch.log(sigmas[0] / sigmas[1])
    for thresholding, d_in in ((True, clamped), (False, raw)):
        out = solve(_big_denoiser, x, sigmas, "dpmpp", max_order=1, thresholding=thresholding)
        torch.testing.assert_close(out[1], (sigmas[1] / sigmas[0]) * x - torch.expm1(-h) * d_in)
    # No data prediction in the buffer, so no thresholding: plain Euler.
    out = solve(_big_denoiser, x, sigmas, "dpmpp", predict_x0=False, thresholding=True)
    torch.testing.assert_close(out[1], x + (sigmas[1] - sigmas[0]) * (x - raw) / sigmas[0])


def test_threshold_quantile_matches_torch_quantile():
    g = torch.Generator().manual_seed(1)
    for shape in [(3, 1, 4, 4), (2, 3, 7, 5), (5, 1)]:
        x0 = 3 * torch.randn(shape, generator=g, dtype=torch.float64)
        s = torch.quantile(x0.abs().reshape(shape[0], -1), 0.995, dim=1).clamp_min(1)
        s = s.reshape(-1, *([1] * (len(shape) - 1)))
        torch.testing.assert_close(_dynamic_threshold(x0), torch.maximum(torch.minimum(x0, s), -s) / s)


def test_check_solver_defaults_and_errors():
    assert check_solver("dpmpp") == MAX_ORDER["dpmpp"] == 3
    assert check_solver("ipndm") == MAX_ORDER["ipndm"] == 4
    assert check_solver("ipndm", 2) == 2
    for solver in ("euler", "heun", "dpm"):
        assert check_solver(solver) is None and check_solver(solver, 7) is None
    with pytest.raises(ValueError, match="Unknown solver 'rk4'.*euler.*ipndm"):
        check_solver("rk4")
    for solver, bad, top in (("dpmpp", 0, 3), ("dpmpp", 4, 3), ("ipndm", 0, 4), ("ipndm", 5, 4),
                             ("ipndm", 2.5, 4), ("dpmpp", True, 3)):
        with pytest.raises(ValueError, match=rf"max_order={bad!r} is out of range for {solver}.*1\.\.{top}"):
            check_solver(solver, bad)
    with pytest.raises(ValueError, match="Unknown solver"):
        solver_nfe("rk4", 4)
    with pytest.raises(ValueError, match="Unknown solver"):
        solve(gauss_denoise, torch.zeros(1, 1), edm_sigmas(3), "rk4")


def test_solve_rejects_bad_sigmas():
    x = torch.zeros(2, 3, dtype=torch.float64)
    for bad in (torch.tensor([1.0, 2.0]), torch.tensor([2.0, 1.0, 0.0]), torch.tensor([2.0, 2.0]),
                torch.ones(2, 2), torch.tensor([])):
        with pytest.raises(ValueError, match="sigmas"):
            solve(gauss_denoise, x, bad, "euler")
