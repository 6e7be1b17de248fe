"""The CPU rasterizer against an independent brute-force per-pixel compositor, values and gradients."""

from __future__ import annotations

import math

import pytest
import torch
from gsplat.cuda._torch_impl import (
    _fully_fused_projection,
    _isect_tiles,
    _quat_scale_to_covar_preci,
    _spherical_harmonics,
)

from artifactworld_ns.alpha_compositing import composite_pairs
from artifactworld_ns.pixel_gaussian_pairs import find_pairs, tile_rectangles
from artifactworld_ns.torch_rasterizer import rasterization, rasterization_torch

TILE = 16


def random_scene(num_gaussians=48, num_cameras=2, width=41, height=35, seed=0, dtype=torch.float64, sh_degree=None):
    """Gaussians in a box in front of cameras that look down +z (OpenCV convention) from near the origin."""
    g = torch.Generator().manual_seed(seed)
    means = torch.rand(num_gaussians, 3, generator=g, dtype=dtype) * torch.tensor(
        [2.0, 2.0, 2.0], dtype=dtype
    ) + torch.tensor([-1.0, -1.0, 2.0], dtype=dtype)
    quats = torch.randn(num_gaussians, 4, generator=g, dtype=dtype)
    scales = torch.rand(num_gaussians, 3, generator=g, dtype=dtype) * 0.15 + 0.03
    opacities = torch.rand(num_gaussians, generator=g, dtype=dtype) * 0.9 + 0.05
    if sh_degree is None:
        colors = torch.rand(num_gaussians, 3, generator=g, dtype=dtype)
    else:
        colors = torch.randn(num_gaussians, (sh_degree + 1) ** 2, 3, generator=g, dtype=dtype) * 0.3
    viewmats = torch.eye(4, dtype=dtype).repeat(num_cameras, 1, 1)
    for c in range(num_cameras):
        angle = 0.1 * c
        viewmats[c, :3, :3] = torch.tensor(
            [[math.cos(angle), 0, math.sin(angle)], [0, 1, 0], [-math.sin(angle), 0, math.cos(angle)]], dtype=dtype
        )
        viewmats[c, :3, 3] = torch.tensor([0.1 * c, -0.05 * c, 0.2], dtype=dtype)
    Ks = torch.tensor([[30.0, 0, width / 2], [0, 30.0, height / 2], [0, 0, 1]], dtype=dtype).repeat(num_cameras, 1, 1)
    return dict(
        means=means,
        quats=quats,
        scales=scales,
        opacities=opacities,
        colors=colors,
        viewmats=viewmats,
        Ks=Ks,
        width=width,
        height=height,
    )


def brute_force_composite(means2d, conics, colors, opacities, radii, depths, width, height, absgrad=None):
    """Per pixel, every Gaussian front to back, with the CUDA kernel's rules written out one by one.

    A Gaussian reaches a pixel only if the pixel's tile lies in the Gaussian's tile rectangle (the
    3-sigma radius rounded out to tiles), as in gsplat. No tiles, no sorting tricks, no cumprod.
    """
    num_cameras, num_gaussians = means2d.shape[:2]
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    xs, ys = xs.flatten(), ys.flatten()
    px, py = xs.to(means2d.dtype) + 0.5, ys.to(means2d.dtype) + 0.5
    tile_x, tile_y = xs // TILE, ys // TILE
    tiles_w, tiles_h = math.ceil(width / TILE), math.ceil(height / TILE)
    images, alphas = [], []
    for c in range(num_cameras):
        transmittance = torch.ones(px.shape, dtype=means2d.dtype)
        color = torch.zeros(px.shape[0], colors.shape[-1], dtype=colors.dtype)
        done = torch.zeros(px.shape, dtype=torch.bool)
        for g in torch.argsort(depths[c]).tolist():
            radius = int(radii[c, g])
            if radius <= 0:
                continue
            mx, my = (means2d[c, g].detach() / TILE).tolist()
            r = radius / TILE
            x0, x1 = min(max(math.floor(mx - r), 0), tiles_w), min(max(math.ceil(mx + r), 0), tiles_w)
            y0, y1 = min(max(math.floor(my - r), 0), tiles_h), min(max(math.ceil(my + r), 0), tiles_h)
            touches = (tile_x >= x0) & (tile_x < x1) & (tile_y >= y0) & (tile_y < y1)
            dx = means2d[c, g, 0] - px
            dy = means2d[c, g, 1] - py
            if absgrad is not None and dx.requires_grad:
                for axis, offset in ((0, dx), (1, dy)):
                    offset.register_hook(_accumulate_abs(absgrad, c, g, axis))
            a, b, cc = conics[c, g]
            sigma = 0.5 * (a * dx * dx + cc * dy * dy) + b * dx * dy
            alpha = torch.clamp_max(opacities[c, g] * torch.exp(-sigma), 0.999)
            active = touches & ~done & (sigma >= 0) & (alpha >= 1.0 / 255.0)
            next_t = transmittance * (1 - alpha)
            stop = active & (next_t <= 1e-4)
            done = done | stop
            active = active & ~stop
            color = color + torch.where(active, alpha * transmittance, 0.0)[:, None] * colors[c, g]
            transmittance = torch.where(active, next_t, transmittance)
        images.append(color.reshape(height, width, -1))
        alphas.append((1 - transmittance).reshape(height, width, 1))
    return torch.stack(images), torch.stack(alphas)


def _accumulate_abs(absgrad, camera, gaussian, axis):
    def hook(grad):
        absgrad[camera, gaussian, axis] += grad.abs().sum()

    return hook


def brute_force_rasterization(
    scene, sh_degree=None, render_mode="RGB", rasterize_mode="classic", backgrounds=None, absgrad=None, meta=None
):
    """``meta``, if given, receives ``means2d`` (its gradient retained) and ``radii``."""
    covars, _ = _quat_scale_to_covar_preci(scene["quats"], scene["scales"], True, False, triu=False)
    radii, means2d, depths, conics, compensations = _fully_fused_projection(
        scene["means"],
        covars,
        scene["viewmats"],
        scene["Ks"],
        scene["width"],
        scene["height"],
        calc_compensations=rasterize_mode == "antialiased",
    )
    if meta is not None:
        if means2d.requires_grad:
            means2d.retain_grad()
        meta.update(means2d=means2d, radii=radii)
    num_cameras = scene["viewmats"].shape[0]
    opacities = scene["opacities"].expand(num_cameras, -1)
    if compensations is not None:
        opacities = opacities * compensations
    colors = scene["colors"]
    if sh_degree is not None:
        centers = torch.inverse(scene["viewmats"])[:, :3, 3]
        colors = torch.clamp_min(
            _spherical_harmonics(
                sh_degree, scene["means"][None] - centers[:, None], colors.expand(num_cameras, -1, -1, -1)
            )
            + 0.5,
            0.0,
        )
    else:
        colors = colors.expand(num_cameras, -1, -1)
    if render_mode == "RGB+ED":
        colors = torch.cat([colors, depths[..., None]], dim=-1)
    image, alpha = brute_force_composite(
        means2d, conics, colors, opacities, radii, depths, scene["width"], scene["height"], absgrad=absgrad
    )
    if backgrounds is not None:
        image = image + (1 - alpha) * backgrounds[:, None, None, :]
    if render_mode == "RGB+ED":
        image = torch.cat([image[..., :3], image[..., 3:] / alpha.clamp(min=1e-10)], dim=-1)
    return image, alpha


PARAMS = ("means", "quats", "scales", "opacities", "colors")


def render_and_grads(fn, scene, **kwargs):
    leaves = {k: scene[k].clone().requires_grad_(True) for k in PARAMS}
    inputs = {**scene, **leaves}
    image, alpha = fn(inputs, **kwargs)
    weights = torch.linspace(0.5, 1.5, image.numel(), dtype=image.dtype).reshape(image.shape)
    loss = (image * weights).sum() + (alpha**2).sum()
    loss.backward()
    return image.detach(), alpha.detach(), {k: v.grad for k, v in leaves.items()}


def ours(inputs, **kwargs):
    image, alpha, _ = rasterization_torch(**inputs, **kwargs)
    return image, alpha


@pytest.mark.parametrize(
    "case",
    [
        dict(seed=0),
        dict(seed=1, sh_degree=2),
        dict(seed=2, render_mode="RGB+ED"),
        dict(seed=3, rasterize_mode="antialiased"),
        dict(seed=4, num_gaussians=120, backgrounds=True),
    ],
    ids=["rgb", "sh2", "rgb+ed", "antialiased", "dense+background"],
)
def test_matches_brute_force_values_and_gradients(case):
    case = dict(case)
    sh_degree = case.pop("sh_degree", None)
    scene = random_scene(seed=case.pop("seed"), num_gaussians=case.pop("num_gaussians", 48), sh_degree=sh_degree)
    kwargs = dict(sh_degree=sh_degree, **case)
    if kwargs.pop("backgrounds", False):
        kwargs["backgrounds"] = torch.tensor([[0.2, 0.5, 0.9], [1.0, 0.0, 0.3]], dtype=torch.float64)
    image, alpha, grads = render_and_grads(ours, scene, **kwargs)
    ref_image, ref_alpha, ref_grads = render_and_grads(brute_force_rasterization, scene, **kwargs)

    assert alpha.max() > 0.5, "the scene should cover a good part of the image"
    assert image.shape == ref_image.shape == (2, scene["height"], scene["width"], image.shape[-1])
    torch.testing.assert_close(image, ref_image, atol=1e-4, rtol=0)
    torch.testing.assert_close(alpha, ref_alpha, atol=1e-4, rtol=0)
    for name in PARAMS:
        assert grads[name].abs().max() > 0, name
        torch.testing.assert_close(grads[name], ref_grads[name], atol=1e-4, rtol=1e-4, msg=lambda m: f"{name}: {m}")


def test_float32_matches_float64_brute_force():
    scene64 = random_scene(seed=7)
    scene32 = {k: (v.float() if torch.is_tensor(v) else v) for k, v in scene64.items()}
    image, alpha, _ = rasterization_torch(**scene32)
    ref_image, ref_alpha = brute_force_rasterization(scene64)
    torch.testing.assert_close(image.double(), ref_image, atol=1e-4, rtol=0)
    torch.testing.assert_close(alpha.double(), ref_alpha, atol=1e-4, rtol=0)


def test_early_termination_on_opaque_stack():
    """Twenty near-opaque Gaussians on one pixel: the pixel stops once T would fall to 1e-4."""
    n = 20
    dtype = torch.float64
    means2d = torch.tensor([[[8.0, 8.0]]], dtype=dtype).repeat(1, n, 1)
    conics = torch.tensor([[[0.01, 0.0, 0.01]]], dtype=dtype).repeat(1, n, 1)
    opacities = torch.full((1, n), 0.9, dtype=dtype)
    colors = torch.arange(n, dtype=dtype).reshape(1, n, 1).repeat(1, 1, 3)
    radii = torch.full((1, n), 20, dtype=torch.int32)
    depths = torch.arange(1, n + 1, dtype=dtype)[None]
    pairs = find_pairs(means2d, conics, opacities, radii, depths, 16, 16, TILE)
    image, alpha = composite_pairs(means2d, conics, colors, opacities, pairs, 16, 16)
    # Centre pixel (7.5, 7.5): alpha = 0.9 exp(-0.5*0.01*0.5) per layer; T after 3 layers ~1e-3,
    # after 4 ~1e-4 -> the 4th layer is where the kernel stops (T would drop to <= 1e-4).
    a = 0.9 * math.exp(-0.5 * (0.01 * 0.25 + 0.01 * 0.25))
    t, expected, layer = 1.0, 0.0, 0
    while t * (1 - a) > 1e-4:
        expected += a * t * layer
        t *= 1 - a
        layer += 1
    assert layer == 4
    assert image[0, 7, 7, 0].item() == pytest.approx(expected, abs=1e-9)
    assert alpha[0, 7, 7, 0].item() == pytest.approx(1 - t, abs=1e-9)


def test_tile_rectangles_equal_gsplat_isect_tiles():
    scene = random_scene(seed=5, num_gaussians=60, width=70, height=50)
    covars, _ = _quat_scale_to_covar_preci(scene["quats"], scene["scales"], True, False, triu=False)
    radii, means2d, depths, _, _ = _fully_fused_projection(
        scene["means"], covars, scene["viewmats"], scene["Ks"], 70, 50
    )
    tiles_w, tiles_h = math.ceil(70 / TILE), math.ceil(50 / TILE)
    tiles_per_gauss, _, _ = _isect_tiles(means2d, radii, depths, TILE, tiles_w, tiles_h)
    tile_mins, tile_maxs = tile_rectangles(means2d, radii, TILE, tiles_w, tiles_h)
    assert tiles_per_gauss.sum() > 60
    assert torch.equal(((tile_maxs - tile_mins).prod(-1) * (radii > 0)).int(), tiles_per_gauss)


def test_meta_feeds_densification_and_absgrad_matches_brute_force():
    scene = random_scene(seed=6)
    scene = {k: (v.requires_grad_(True) if k in PARAMS else v) for k, v in scene.items()}
    image, alpha, meta = rasterization(**scene, absgrad=True, packed=False, sparse_grad=False)
    for key in ("means2d", "radii", "width", "height", "n_cameras", "gaussian_ids"):
        assert key in meta
    assert meta["radii"].shape == (2, 48) and meta["radii"].dtype == torch.int32
    meta["means2d"].retain_grad()  # what DefaultStrategy.step_pre_backward does
    weights = torch.linspace(0.5, 1.5, image.numel(), dtype=image.dtype).reshape(image.shape)
    ((image * weights).sum() + (alpha**2).sum()).backward()
    assert meta["means2d"].grad is not None and meta["means2d"].grad.abs().sum() > 0

    ref_absgrad = torch.zeros(2, 48, 2, dtype=torch.float64)
    ref_scene = {k: (v.detach().requires_grad_(True) if k in PARAMS else v) for k, v in scene.items()}
    ref_image, ref_alpha = brute_force_rasterization(ref_scene, absgrad=ref_absgrad)
    ((ref_image * weights).sum() + (ref_alpha**2).sum()).backward()
    torch.testing.assert_close(meta["means2d"].absgrad, ref_absgrad, atol=1e-4, rtol=1e-4)
    # |sum| <= sum |.|, strictly somewhere: absgrad is not the plain gradient.
    assert (meta["means2d"].absgrad - meta["means2d"].grad.abs() >= -1e-9).all()
    assert (meta["means2d"].absgrad - meta["means2d"].grad.abs()).max() > 1e-6


def test_unsupported_option_is_refused_in_one_sentence():
    scene = random_scene(seed=0)
    with pytest.raises(NotImplementedError, match="does not support packed=True"):
        rasterization_torch(**scene, packed=True)


def saturating_scene(seed, num_gaussians, opacity, scale, width=48, height=40):
    """Many large Gaussians: with ``opacity`` near 1 most pixels saturate within a few layers."""
    scene = random_scene(num_gaussians=num_gaussians, width=width, height=height, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    scene["scales"] = torch.rand(num_gaussians, 3, generator=g, dtype=torch.float64) * scale + scale
    scene["opacities"] = torch.full((num_gaussians,), opacity, dtype=torch.float64)
    return scene


@pytest.mark.parametrize(
    "opacity, scale, count, saturates",
    [(0.98, 0.4, 150, True), (0.95, 0.5, 300, True), (0.04, 0.4, 150, False)],
    ids=["opaque-large", "opaque-many", "never-saturates"],
)
def test_early_stop_matches_brute_force_and_skips_pairs(opacity, scale, count, saturates, monkeypatch):
    import artifactworld_ns.pixel_gaussian_pairs as pair_finding

    scene = saturating_scene(seed=11, num_gaussians=count, opacity=opacity, scale=scale)
    monkeypatch.setattr(pair_finding, "_CHUNK_ELEMENTS", 4096)  # many chunks: pixels die between them
    image, alpha, grads = render_and_grads(ours, scene)
    ref_image, ref_alpha, ref_grads = render_and_grads(brute_force_rasterization, scene)
    torch.testing.assert_close(image, ref_image, atol=1e-4, rtol=0)
    torch.testing.assert_close(alpha, ref_alpha, atol=1e-4, rtol=0)
    for name in PARAMS:
        torch.testing.assert_close(grads[name], ref_grads[name], atol=1e-4, rtol=1e-4, msg=lambda m: f"{name}: {m}")
    means2d_grad, absgrad, radii = densification_inputs(rasterization_torch, scene)
    ref_means2d_grad, ref_absgrad, ref_radii = densification_inputs(brute_force_rasterization, scene)
    assert torch.equal(radii, ref_radii)
    torch.testing.assert_close(means2d_grad, ref_means2d_grad, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(absgrad, ref_absgrad, atol=1e-4, rtol=1e-4)
    _, _, meta = rasterization_torch(**scene)
    monkeypatch.setattr(pair_finding, "_LOG_TRANSMITTANCE_DONE", -math.inf)  # early stop off: every pair
    _, _, meta_all = rasterization_torch(**scene)
    saturated = (alpha > 1 - 1e-4 * 1.5).float().mean()
    if saturates:  # measured: 0.42 and 0.17 of the pairs
        assert saturated > 0.1 and meta["n_pairs"] < 0.7 * meta_all["n_pairs"]
    else:
        assert saturated == 0 and meta["n_pairs"] == meta_all["n_pairs"]


def densification_inputs(fn, scene):
    """What the densification strategy reads: ``means2d.grad``, ``means2d.absgrad`` and ``radii``."""
    inputs = {k: (v.clone().requires_grad_(True) if k in PARAMS else v) for k, v in scene.items()}
    absgrad = torch.zeros(scene["viewmats"].shape[0], scene["means"].shape[0], 2, dtype=torch.float64)
    if fn is rasterization_torch:
        image, alpha, meta = rasterization_torch(**inputs, absgrad=True)
        meta["means2d"].retain_grad()
    else:
        meta = {}
        image, alpha = fn(inputs, absgrad=absgrad, meta=meta)
    weights = torch.linspace(0.5, 1.5, image.numel(), dtype=image.dtype).reshape(image.shape)
    ((image * weights).sum() + (alpha**2).sum()).backward()
    assert meta["means2d"].grad.abs().max() > 0
    return meta["means2d"].grad, meta["means2d"].absgrad if fn is rasterization_torch else absgrad, meta["radii"]


def test_needle_gaussians_match_brute_force():
    """Long thin rotated Gaussians: the per-row ellipse bounds of the pair finding must cover every
    pixel with ``alpha >= 1/255``, also where the ellipse is far from its bounding box."""
    scene = random_scene(seed=21, num_gaussians=40, width=64, height=48)
    g = torch.Generator().manual_seed(21)
    scene["scales"] = torch.stack(
        [
            torch.rand(40, generator=g, dtype=torch.float64) * 0.6 + 0.3,
            torch.full((40,), 0.004, dtype=torch.float64),
            torch.full((40,), 0.004, dtype=torch.float64),
        ],
        1,
    )
    image, alpha, grads = render_and_grads(ours, scene)
    ref_image, ref_alpha, ref_grads = render_and_grads(brute_force_rasterization, scene)
    assert (ref_alpha > 0).float().mean() > 0.1, "the needles should cover a good part of the image"
    torch.testing.assert_close(image, ref_image, atol=1e-4, rtol=0)
    torch.testing.assert_close(alpha, ref_alpha, atol=1e-4, rtol=0)
    for name in PARAMS:
        torch.testing.assert_close(grads[name], ref_grads[name], atol=1e-4, rtol=1e-4, msg=lambda m: f"{name}: {m}")


def test_float32_gradients_match_float64_brute_force():
    """Training runs in float32: values and gradients (to 1e-4 of the largest) stay those of the float64
    brute force where pixels saturate (fails if the transmittance is summed in float32)."""
    scene64 = saturating_scene(seed=13, num_gaussians=120, opacity=0.9, scale=0.3)
    scene32 = {k: (v.float() if torch.is_tensor(v) else v) for k, v in scene64.items()}
    image, alpha, grads = render_and_grads(ours, scene32)
    ref_image, ref_alpha, ref_grads = render_and_grads(brute_force_rasterization, scene64)
    assert (ref_alpha > 1 - 1e-3).float().mean() > 0.1, "some pixels should saturate"
    torch.testing.assert_close(image.double(), ref_image, atol=1e-4, rtol=0)
    for name in PARAMS:
        scale = ref_grads[name].abs().max()
        torch.testing.assert_close(
            grads[name].double(), ref_grads[name], atol=1e-4 * scale, rtol=1e-3, msg=lambda m: f"{name}: {m}"
        )


def test_nothing_visible_renders_background_and_zero_gradients():
    scene = random_scene(seed=3)
    scene["means"] = scene["means"] * torch.tensor([1.0, 1.0, -1.0], dtype=torch.float64)  # all behind the cameras
    image, alpha, grads = render_and_grads(
        ours, scene, backgrounds=torch.tensor([[0.2, 0.5, 0.9], [1.0, 0.0, 0.3]], dtype=torch.float64)
    )
    assert torch.equal(alpha, torch.zeros_like(alpha))
    assert torch.equal(image[1], torch.tensor([1.0, 0.0, 0.3], dtype=torch.float64).expand_as(image[1]))
    for name in PARAMS:
        assert grads[name] is None or torch.equal(grads[name], torch.zeros_like(grads[name])), name
