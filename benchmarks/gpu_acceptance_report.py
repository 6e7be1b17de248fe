"""The markdown tables of ``gpu_acceptance.py``: per profile and stage, each measured figure beside its prediction
and their ratio; restore, offload and reload; the drift check; the build."""

from __future__ import annotations

GB = 1e9


def _num(value, scale: float = 1.0, digits: int = 2) -> str:
    return "n/a" if value is None else f"{value / scale:.{digits}f}"


def _triple(fig: dict | None, scale: float = 1.0, digits: int = 2) -> str:
    """``measured / predicted (ratio)``."""
    if fig is None:
        return "n/a"
    ratio = "" if fig["ratio"] is None else f" ({fig['ratio']:.2f}x)"
    return f"{_num(fig['measured'], scale, digits)} / {_num(fig['predicted'], scale, digits)}{ratio}"


def _rows(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _stage_table(profiles: dict) -> list[str]:
    header = [
        "profile",
        "stage",
        "s",
        "transformer s",
        "VAE encode s",
        "VAE decode s",
        "peak allocated GB",
        "peak reserved GB",
        "peak device GB",
        "transformer peak allocated GB",
        "VAE encode / decode peak allocated GB",
    ]
    rows = []
    for name, p in profiles.items():
        if p.get("status") != "measured":
            continue
        for stage, s in p["stages"].items():
            ph = s["phases"]
            rows.append(
                [
                    name,
                    stage,
                    _triple(s["seconds"]),
                    _triple(ph["transformer"]["seconds"]),
                    _triple(ph["vae_encode"]["seconds"]),
                    _triple(ph["vae_decode"]["seconds"]),
                    _triple(s["peak_allocated_bytes"], GB),
                    _triple(s["peak_reserved_bytes"], GB),
                    _triple(s["peak_device_bytes"], GB),
                    _triple(ph["transformer"]["peak_allocated_bytes"], GB),
                    f"{_triple(ph['vae_encode']['peak_allocated_bytes'], GB)}; {_triple(ph['vae_decode']['peak_allocated_bytes'], GB)}",
                ]
            )
    return _rows(header, rows)


def _profile_table(profiles: dict) -> list[str]:
    header = ["profile", "status", "apply s", "restore s", "offload s", "reload s", "weights on device GB", "finite"]
    rows = []
    for name, p in profiles.items():
        if p.get("status") != "measured":
            rows.append([name, f"{p.get('status')}: {p.get('reason') or p.get('error')}", "", "", "", "", "", ""])
            continue
        rows.append(
            [
                name,
                "measured",
                _num(p["apply_seconds"]),
                _triple(p["restore_seconds"]),
                _triple(p["offload_seconds"]),
                _triple(p["reload_seconds"]),
                _triple(p["weights_on_device_bytes"], GB),
                str(p["finite"]),
            ]
        )
    return _rows(header, rows)


def _drift_table(drift: dict) -> list[str]:
    header = ["comparison", "stage 1 heatmap max", "stage 1 mean", "stage 2 restored max", "stage 2 mean"]
    rows = []
    for name, errors in drift["comparisons"].items():
        if errors is None:
            rows.append([name, "n/a", "n/a", "n/a", "n/a"])
            continue
        s1, s2 = errors["stage1_heatmap"], errors["stage2_restored"]
        rows.append(
            [name, f"{s1['max_abs']:.2e}", f"{s1['mean_abs']:.2e}", f"{s2['max_abs']:.2e}", f"{s2['mean_abs']:.2e}"]
        )
    return _rows(header, rows)


def markdown(result: dict) -> str:
    env, config, basis = result["environment"], result["config"], result["prediction_basis"]
    lines = [
        f"# GPU acceptance ({result['mode']}): {env['device_name']}",
        "",
        f"torch {env['torch']} (CUDA {env['cuda']}), diffusers {env['diffusers']}, transformers {env['transformers']}, "
        f"peft {env['peft']}, Python {env['python']}; GPU memory {_num(env['gpu_total_bytes'], GB, 1)} GB.",
        f"Model: {config['width']} width, {config['depth']} of 48 blocks, rank-{config['lora_rank']} adapters, "
        f"text width {config['text_width']}, {config['dtype']}; reference {'x'.join(map(str, config['reference']))} "
        f"(a {config['clip_frames']}-frame clip), {config['steps']} steps per stage; random weights (UNTRAINED).",
        f"Cells are measured / predicted (ratio). Predicted memory: {basis['memory']}; seconds: {basis['seconds']}."
        + (f" {basis['note']}." if basis["note"] else ""),
        "",
        "## Per stage",
        "",
        *_stage_table(result["profiles"]),
        "",
        "## Per profile: restore (both stages), offload() and to(device)",
        "",
        *_profile_table(result["profiles"]),
        "",
    ]
    drift = result.get("drift")
    if drift is not None:
        release = drift["release"]
        lines += [
            f"## Drift: the tiny release, {drift['device_dtype']} on {drift['device']} (max / mean absolute error, values in [0, 1])",
            "",
            *_drift_table(drift),
            "",
            "Fixture weights match: "
            + ("yes" if release["weights_match"] else f"NO ({', '.join(release['differing_files'])})")
            + ". A CUDA generator draws other numbers than the CPU's: `device_cpu_draws_vs_fixture` and "
            "`device_vs_device_fp32` leave it out and show bf16 (its arithmetic, and the VAE's posterior sample drawn "
            "in bf16).",
            "",
        ]
    build = result.get("build")
    if build is not None:
        lines += [
            "## Build",
            "",
            f"transformer {_num(build['transformer_build_seconds'])} s, VAE {_num(build['vae_build_seconds'])} s "
            f"(random init on the device); adapters {_num(build['adapters_seconds'])} s, of which "
            f"lora.load_lora_adapter {_num(build['adapter_load_seconds'])} s; prompts {_num(build['prompts_seconds'])} s; "
            f"auxiliary latents {_num(build['auxiliary_latents_seconds'])} s. Parameters: transformer "
            f"{build['parameters']['transformer'] / 1e6:,.1f} M, LoRA {build['parameters']['lora'] / 1e6:,.1f} M, "
            f"VAE {build['parameters']['vae'] / 1e6:,.1f} M; on the device {_num(build['weights_on_device_bytes'], GB)} GB. "
            f"Predicted load from disk at 2 GB/s: {_num(build['predicted_disk_load_seconds'])} s.",
            "",
        ]
    if result["dropped_profiles"]:
        lines += [f"Dropped for the time budget: {', '.join(result['dropped_profiles'])}.", ""]
    if result["errors"]:
        lines += ["Errors:", "", *[f"- {e}" for e in result["errors"]], ""]
    lines.append(f"Wall time {_num(result['wall_seconds'], 1, 0)} s.")
    return "\n".join(lines) + "\n"
