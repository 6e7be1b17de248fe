"""The printed tables of ``full_scale.py``: weights, real-width blocks, the VAE, and the derived GPU model."""

from __future__ import annotations


def _gb(x: float) -> str:
    return f"{x / 1e9:.2f}"


def _table(title: str, columns):
    from rich.table import Table

    table = Table(title=title)
    for column in columns:
        table.add_column(column)
    return table


def _weights_table(w: dict):
    table = _table("1. Weights (counted on the meta device)", ("part", "parameters", "GB bf16", "GB other storage"))
    block_and_lora = w["transformer_block_bf16"] + w["lora_block_both_adapters"]
    fp8_total = w["transformer_other_bf16"] + w["transformer_blocks"] * w["transformer_block_fp8"]
    table.add_row(
        "transformer 13B",
        f"{w['transformer_params'] / 1e9:.3f} B",
        _gb(w["transformer_bf16"]),
        f"fp8 layerwise: {_gb(fp8_total)}",
    )
    table.add_row(
        "  one block / outside blocks",
        "",
        f"{_gb(w['transformer_block_bf16'])} / {_gb(w['transformer_other_bf16'])}",
        f"fp8 block: {_gb(w['transformer_block_fp8'])}",
    )
    table.add_row(
        "  group offload on the GPU",
        "",
        f"no stream {_gb(w['transformer_other_bf16'] + block_and_lora)}",
        f"stream {_gb(w['transformer_other_bf16'] + 2 * block_and_lora)}",
    )
    table.add_row(
        "LoRA, both adapters (rank 128)", "", _gb(w["lora_block_both_adapters"] * w["transformer_blocks"]), "kept bf16"
    )
    table.add_row("VAE (0.9.7/0.9.8)", f"{w['vae_params'] / 1e9:.3f} B", _gb(w["vae_bf16"]), "")
    table.add_row(
        "T5-XXL encoder", f"{w['text_encoder_params'] / 1e9:.3f} B", _gb(w["text_encoder_bf16"]), "first run only"
    )
    return table


def _blocks_table(blocks: dict):
    table = _table(
        "2. Real-width transformer, one step, bf16 on this CPU (measured; 48-block column derived)",
        (
            "stage",
            "tokens",
            "s 1 block",
            "s 2 blocks",
            "s/block",
            "s 48 (CPU)",
            "GB tensors 1/2 blocks",
            "GB process 1/2 blocks",
            "TFLOP 1/2",
            "TFLOP 48",
        ),
    )
    for stage, b in blocks.items():
        r1, r2 = b["runs"]
        table.add_row(
            stage,
            str(r1["tokens"]),
            f"{r1['seconds']:.1f}",
            f"{r2['seconds']:.1f}",
            f"{b['seconds']['per_block']:.1f}",
            f"{b['seconds']['at_depth']:.0f}",
            f"{_gb(r1['tensor_peak_bytes'])} / {_gb(r2['tensor_peak_bytes'])}",
            f"{_gb(r1['process_peak_bytes'])} / {_gb(r2['process_peak_bytes'])}",
            f"{r1['flops'] / 1e12:.1f} / {r2['flops'] / 1e12:.1f}",
            f"{b['flops']['at_depth'] / 1e12:.0f}",
        )
    return table


def _vae_table(vae_runs: list):
    table = _table(
        "3. VAE encode / decode, bf16 (meta: traced at full size; cpu: measured)",
        (
            "device",
            "frames",
            "tiled",
            "enc TFLOP",
            "enc GB tensors",
            "enc GB process",
            "enc s",
            "dec TFLOP",
            "dec GB tensors",
            "dec GB process",
            "dec s",
        ),
    )
    nan = float("nan")
    for v in vae_runs:
        cells = [v["device"], str(v["frames"]), str(v["tiled"])]
        for phase in (v["encode"], v["decode"]):
            cells += [
                f"{phase['flops'] / 1e12:.1f}",
                _gb(phase["tensor_peak_bytes"]),
                _gb(phase.get("process_peak_bytes", nan)),
                f"{phase.get('seconds', nan):.0f}",
            ]
        table.add_row(*cells)
    return table


def _gpu_tables(p: dict, utilisation: dict, paper: dict):
    table = _table(
        f"4. Derived: peak GPU memory and seconds per clip (official clip, 8+8 steps; "
        f"utilisation {utilisation['transformer']:.0%} transformer / {utilisation['vae']:.0%} VAE)",
        ("fp8", "group offload", "VAE tiling", "peak GB", "A100 s/clip", "H100 s/clip", "profile"),
    )
    for c in p["combinations"]:
        names = [n for n, prof in p["profiles"].items() if prof["row"] is c]
        table.add_row(
            str(c["fp8"]),
            str(c["group_offload"]),
            str(c["vae_tiling"]),
            _gb(c["peak_bytes"]),
            f"{c['A100-SXM4-80GB']['clip']:.0f}",
            f"{c['H100-SXM5-80GB']['clip']:.0f}",
            ", ".join(names),
        )
    scene = _table(
        "Per scene (derived): 5 rounds x 4 clips + backbone load + splatfacto (assumed), beside the paper's Table 6",
        ("run", "s/clip", "restoration min", "splatfacto min (assumed)", "min/scene"),
    )
    for name, row in p["per_scene"].items():
        scene.add_row(
            name,
            f"{row['seconds_per_clip']:.0f}",
            f"{row['restoration_minutes']:.1f}",
            f"{row['splatfacto_minutes_assumed']:.0f}",
            f"{row['minutes_per_scene']:.1f}",
        )
    scene.add_row("paper Table 6 (A100, measured by the authors)", "", "", "", f"{paper['minutes_per_scene']}")
    return table, scene


def report(result: dict) -> None:
    from rich.console import Console

    console = Console(width=200)
    p = result["predictions"]
    for table in (
        _weights_table(result["weights"]),
        _blocks_table(result["blocks"]),
        _vae_table(result["vae"]),
        *_gpu_tables(p, result["utilisation"], result["paper_table6"]),
    ):
        console.print(table)
    for name, gpu in result["gpus"].items():
        console.print(
            f"{name}: dense bf16 peak {gpu['bf16_tflops']:.0f} TFLOP/s, HBM {gpu['hbm_tbps']} TB/s, "
            f"host link {gpu['host_gbps']:.0f} GB/s (assumed), splatfacto {gpu['splatfacto_min']:.0f} min/scene (assumed)"
        )
    o = p["official_two_process"]
    console.print(
        f"Official two-process design: peak {_gb(o['peak_bytes_if_t5_stays_on_gpu'])} GB if T5 stays on the GPU "
        f"(paper: {result['paper_table6']['peak_gb']} GB); backbone + T5 load {o['load_seconds_per_stage']:.0f} s per stage."
    )
