import pytest
import torch
from peft import get_peft_model_state_dict
from safetensors.torch import save_file

from artifactworld_ns.restorer.configs import OFFICIAL_LORA_TARGETS
from artifactworld_ns.restorer.errors import RestorerInputError
from artifactworld_ns.restorer.lora import adapter_names, load_lora_adapter, lora_modules, set_active_adapter
from artifactworld_ns.restorer.sampler import latent_video_coords
from artifactworld_ns.restorer.tiny import build_tiny_transformer, random_lora_state_dict


def _transformer():
    torch.manual_seed(0)
    return build_tiny_transformer()


def _forward(transformer):
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(1, 8, 8, generator=g)
    text = torch.randn(1, 4, 16, generator=g)
    with torch.no_grad():
        return transformer(
            hidden_states=hidden,
            encoder_hidden_states=text,
            timestep=torch.full((1, 8), 500.0),
            encoder_attention_mask=torch.ones(1, 4),
            video_coords=latent_video_coords(2, 2, 2),
            return_dict=False,
        )[0]


@pytest.fixture
def lora_files(tmp_path):
    donor = _transformer()
    files = {}
    for fmt, seed in (("diffusers", 1), ("comfyui", 2)):
        files[fmt, seed] = tmp_path / f"{fmt}-{seed}.safetensors"
        save_file(random_lora_state_dict(donor, fmt, seed=seed), str(files[fmt, seed]))
    # the same weights as diffusers-seed-1, in ComfyUI format
    files["comfyui", 1] = tmp_path / "comfyui-1.safetensors"
    save_file(random_lora_state_dict(donor, "comfyui", seed=1), str(files["comfyui", 1]))
    return files


def test_both_key_formats_land_in_the_same_modules(lora_files):
    a, b = _transformer(), _transformer()
    n_a = load_lora_adapter(a, lora_files["diffusers", 1], "stage1")
    n_b = load_lora_adapter(b, lora_files["comfyui", 1], "stage1")
    # the official targets (to_q, to_k, to_v, to_out.0, ff.net.0.proj, ff.net.2) match by suffix, as in
    # peft: both attentions' projections and both feed-forward linears of every block
    expected = {
        f"transformer_blocks.{i}.{m}"
        for i in range(2)
        for m in [f"{attn}.{p}" for attn in ("attn1", "attn2") for p in ("to_q", "to_k", "to_v", "to_out.0")]
        + ["ff.net.0.proj", "ff.net.2"]
    }
    assert OFFICIAL_LORA_TARGETS == ("to_q", "to_k", "to_v", "to_out.0", "ff.net.0.proj", "ff.net.2")
    assert n_a == n_b == len(expected) == 20
    assert lora_modules(a, "stage1") == lora_modules(b, "stage1") == expected
    set_active_adapter(a, "stage1")
    set_active_adapter(b, "stage1")
    assert torch.allclose(_forward(a), _forward(b))
    assert not torch.allclose(_forward(a), _forward(_transformer()), atol=1e-4), "the adapter must change outputs"


def test_adapters_switch_and_each_equals_a_single_adapter_run(lora_files):
    both = _transformer()
    load_lora_adapter(both, lora_files["diffusers", 1], "stage1")
    load_lora_adapter(both, lora_files["comfyui", 2], "stage2")
    assert adapter_names(both) == {"stage1", "stage2"}
    only1, only2 = _transformer(), _transformer()
    load_lora_adapter(only1, lora_files["diffusers", 1], "stage1")
    load_lora_adapter(only2, lora_files["comfyui", 2], "stage2")
    set_active_adapter(only1, "stage1")
    set_active_adapter(only2, "stage2")

    set_active_adapter(both, "stage1")
    out1 = _forward(both)
    set_active_adapter(both, "stage2")
    out2 = _forward(both)
    assert not torch.allclose(out1, out2, atol=1e-4)
    assert torch.allclose(out1, _forward(only1), atol=1e-6)
    assert torch.allclose(out2, _forward(only2), atol=1e-6)
    set_active_adapter(both, "stage1")
    assert torch.allclose(_forward(both), out1, atol=1e-6)


def test_lora_matching_nothing_fails_clearly(tmp_path):
    path = tmp_path / "other.safetensors"
    save_file(
        {
            "transformer.unet.down.0.lora_A.weight": torch.zeros(4, 16),
            "transformer.unet.down.0.lora_B.weight": torch.zeros(16, 4),
        },
        str(path),
    )
    with pytest.raises(RestorerInputError, match="matches no module of the transformer"):
        load_lora_adapter(_transformer(), path, "stage1")


def test_lora_with_wrong_shape_fails_clearly(tmp_path):
    path = tmp_path / "wide.safetensors"
    save_file(
        {
            "transformer.transformer_blocks.0.attn1.to_q.lora_A.weight": torch.zeros(4, 32),
            "transformer.transformer_blocks.0.attn1.to_q.lora_B.weight": torch.zeros(16, 4),
        },
        str(path),
    )
    with pytest.raises(RestorerInputError, match="does not fit its 16->16 linear layer"):
        load_lora_adapter(_transformer(), path, "stage1")


def test_lora_partial_targets_and_non_lora_keys_fail(tmp_path):
    state = random_lora_state_dict(_transformer(), "diffusers")
    state["transformer.transformer_blocks.7.attn1.to_q.lora_A.weight"] = torch.zeros(4, 16)
    state["transformer.transformer_blocks.7.attn1.to_q.lora_B.weight"] = torch.zeros(16, 4)
    path = tmp_path / "partial.safetensors"
    save_file(state, str(path))
    with pytest.raises(RestorerInputError, match="targets 1 module\\(s\\) the transformer does not have"):
        load_lora_adapter(_transformer(), path, "stage1")
    path2 = tmp_path / "weird.safetensors"
    save_file({"transformer.proj_in.weight": torch.zeros(16, 8)}, str(path2))
    with pytest.raises(RestorerInputError, match="not a LoRA weight"):
        load_lora_adapter(_transformer(), path2, "stage1")


def test_unknown_adapter_name():
    with pytest.raises(RestorerInputError, match="no LoRA adapter named 'stage3'"):
        set_active_adapter(_transformer(), "stage3")


def test_mixed_ranks_and_alpha_are_honoured(tmp_path):
    donor = _transformer()
    state = random_lora_state_dict(donor, "comfyui", seed=3)
    g = torch.Generator().manual_seed(4)
    state["diffusion_model.transformer_blocks.1.attn2.to_v.lora_A.weight"] = torch.randn(2, 16, generator=g)
    state["diffusion_model.transformer_blocks.1.attn2.to_v.lora_B.weight"] = torch.randn(16, 2, generator=g)
    state["diffusion_model.transformer_blocks.0.attn1.to_q.alpha"] = torch.tensor(8.0)
    path = tmp_path / "mixed.safetensors"
    save_file(state, str(path))
    transformer = _transformer()
    assert load_lora_adapter(transformer, path, "stage2") == 20
    to_v = transformer.get_submodule("transformer_blocks.1.attn2.to_v")
    assert to_v.r["stage2"] == 2 and to_v.scaling["stage2"] == pytest.approx(2 / 2)
    to_q = transformer.get_submodule("transformer_blocks.0.attn1.to_q")
    assert to_q.r["stage2"] == 4 and to_q.scaling["stage2"] == pytest.approx(8 / 4)
    # the lone alpha stays on its module (diffusers would spread a single network alpha over all of them)
    to_k = transformer.get_submodule("transformer_blocks.0.attn1.to_k")
    assert to_k.r["stage2"] == 4 and to_k.scaling["stage2"] == pytest.approx(1.0)
    set_active_adapter(transformer, "stage2")
    x = torch.randn(3, 16, generator=g)
    base = to_q.base_layer(x)
    a = state["diffusion_model.transformer_blocks.0.attn1.to_q.lora_A.weight"]
    b = state["diffusion_model.transformer_blocks.0.attn1.to_q.lora_B.weight"]
    with torch.no_grad():
        assert torch.allclose(to_q(x), base + 2.0 * x @ a.T @ b.T, atol=1e-5)


def _key_variant(state, variant):
    """The diffusers-keyed ``state`` rewritten in another accepted key form."""
    bare = {k.removeprefix("transformer."): v for k, v in state.items()}
    if variant == "mixed prefixes":
        return {("diffusion_model." if i % 2 else "transformer.") + k: v for i, (k, v) in enumerate(bare.items())}
    if variant == "lora_down/lora_up":
        return {
            "diffusion_model." + k.replace(".lora_A.", ".lora_down.").replace(".lora_B.", ".lora_up."): v
            for k, v in bare.items()
        }
    return {{"bare": ""}.get(variant, variant) + k: v for k, v in bare.items()}


@pytest.mark.parametrize(
    "variant",
    ["diffusion_model.", "model.diffusion_model.", "base_model.model.", "bare", "mixed prefixes", "lora_down/lora_up"],
)
def test_every_key_form_loads_to_the_same_adapter_through_diffusers(variant, tmp_path):
    state = random_lora_state_dict(_transformer(), "diffusers", seed=1)
    paths = {"diffusers": tmp_path / "diffusers.safetensors", variant: tmp_path / "variant.safetensors"}
    save_file(state, str(paths["diffusers"]))
    save_file(_key_variant(state, variant), str(paths[variant]))
    loaded = {}
    for name, path in paths.items():
        loaded[name] = _transformer()
        assert load_lora_adapter(loaded[name], path, "stage1") == 20
    reference, other = loaded["diffusers"], loaded[variant]
    modules = {k.removeprefix("transformer.").removesuffix(".lora_A.weight") for k in state if ".lora_A." in k}
    assert lora_modules(reference, "stage1") == lora_modules(other, "stage1") == modules
    # the file's tensors, unchanged, in the modules they name; the config diffusers built from them
    want = {k.removeprefix("transformer."): v for k, v in state.items()}
    for transformer in (reference, other):
        got = get_peft_model_state_dict(transformer, adapter_name="stage1")
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
        config = transformer.peft_config["stage1"]
        assert (config.r, config.lora_alpha, config.rank_pattern, config.alpha_pattern) == (4, 4, {}, {})


def test_an_adapter_name_loads_once(lora_files):
    transformer = _transformer()
    load_lora_adapter(transformer, lora_files["diffusers", 1], "stage1")
    with pytest.raises(RestorerInputError, match="already has a LoRA adapter named 'stage1'"):
        load_lora_adapter(transformer, lora_files["comfyui", 2], "stage1")


def test_only_a_diffusers_model_takes_adapters(lora_files):
    with pytest.raises(TypeError, match="diffusers PeftAdapterMixin model, not a Linear"):
        load_lora_adapter(torch.nn.Linear(16, 16), lora_files["diffusers", 1], "stage1")


def test_raw_adapter_weights_round_trip_and_misfits_fail_clearly():
    from artifactworld_ns.restorer.lora_training import adapter_state_dict, add_trainable_lora, load_raw_adapter

    trained, fresh, narrow = _transformer(), _transformer(), _transformer()
    params = add_trainable_lora(trained, "stage2", 4, 8.0, OFFICIAL_LORA_TARGETS)
    assert len(params) == 40 and all(p.dtype == torch.float32 and p.requires_grad for p in params)
    assert sum(p.requires_grad for p in trained.parameters()) == 40
    with torch.no_grad():
        for p in params:
            p.add_(0.1)
    state = adapter_state_dict(trained, "stage2", release=False)
    fresh_params = add_trainable_lora(fresh, "stage2", 4, 8.0, OFFICIAL_LORA_TARGETS)
    load_raw_adapter(fresh, "stage2", state, "step-3")
    assert all(
        torch.equal(a, b) for a, b in zip(fresh_params, params, strict=True)
    )  # in place: the optimizer's tensors
    add_trainable_lora(narrow, "stage2", 2, 2.0, OFFICIAL_LORA_TARGETS)
    with pytest.raises(RestorerInputError, match="has LoRA rank"):
        load_raw_adapter(narrow, "stage2", state, "step-3")
    with pytest.raises(RestorerInputError, match="saved with other LoRA targets or rank"):
        load_raw_adapter(fresh, "stage2", dict(list(state.items())[2:]), "step-3")
