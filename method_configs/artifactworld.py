"""The registered methods: `artifactworld` and `artifactworld-tiny` (entry points in pyproject.toml).

This module only wires: configs from nerfstudio and artifactworld_ns, with the settings of each method.
"""

from __future__ import annotations

from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.data.dataparsers.nerfstudio_dataparser import NerfstudioDataParserConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.plugins.types import MethodSpecification

from artifactworld_ns.datamanager import ArtifactWorldDataManagerConfig
from artifactworld_ns.known_warnings import quiet_known_nerfstudio_warnings
from artifactworld_ns.model import ArtifactWorldModelConfig
from artifactworld_ns.pipeline import ArtifactWorldPipelineConfig
from artifactworld_ns.restorer import untrained_note
from artifactworld_ns.trainer import ArtifactWorldTrainerConfig

quiet_known_nerfstudio_warnings()  # ns-train imports this module before it builds the trainer


def splatfacto_optimizers(max_steps: int) -> dict:
    """Splatfacto's optimizer set (nerfstudio 1.1.5 defaults), with schedules scaled to ``max_steps``."""
    warmup = min(1000, max_steps // 30)
    return {
        "means": {
            "optimizer": AdamOptimizerConfig(lr=1.6e-4, eps=1e-15),
            "scheduler": ExponentialDecaySchedulerConfig(lr_final=1.6e-6, max_steps=max_steps),
        },
        "features_dc": {"optimizer": AdamOptimizerConfig(lr=0.0025, eps=1e-15), "scheduler": None},
        "features_rest": {"optimizer": AdamOptimizerConfig(lr=0.0025 / 20, eps=1e-15), "scheduler": None},
        "opacities": {"optimizer": AdamOptimizerConfig(lr=0.05, eps=1e-15), "scheduler": None},
        "scales": {"optimizer": AdamOptimizerConfig(lr=0.005, eps=1e-15), "scheduler": None},
        "quats": {"optimizer": AdamOptimizerConfig(lr=0.001, eps=1e-15), "scheduler": None},
        "camera_opt": {
            "optimizer": AdamOptimizerConfig(lr=1e-4, eps=1e-15),
            "scheduler": ExponentialDecaySchedulerConfig(
                lr_final=5e-7, max_steps=max_steps, warmup_steps=warmup, lr_pre_warmup=0
            ),
        },
        "bilateral_grid": {
            "optimizer": AdamOptimizerConfig(lr=2e-3, eps=1e-15),
            "scheduler": ExponentialDecaySchedulerConfig(
                lr_final=1e-4, max_steps=max_steps, warmup_steps=warmup, lr_pre_warmup=0
            ),
        },
    }


def artifactworld_config() -> ArtifactWorldTrainerConfig:
    """The real method: splatfacto's schedule, the full restorer preset."""
    max_steps = 30000
    return ArtifactWorldTrainerConfig(
        method_name="artifactworld",
        steps_per_eval_image=100,
        steps_per_eval_batch=0,
        steps_per_save=2000,
        steps_per_eval_all_images=1000,
        max_num_iterations=max_steps,
        mixed_precision=False,
        pipeline=ArtifactWorldPipelineConfig(
            datamanager=ArtifactWorldDataManagerConfig(
                dataparser=NerfstudioDataParserConfig(load_3D_points=True),
                cache_images_type="uint8",
            ),
            model=ArtifactWorldModelConfig(),
            restorer_preset="full",
        ),
        optimizers=splatfacto_optimizers(max_steps),
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
    )


def artifactworld_tiny_config() -> ArtifactWorldTrainerConfig:
    """Same method, CPU-friendly: short schedule, early densification, the untrained tiny restorer."""
    max_steps = 600
    return ArtifactWorldTrainerConfig(
        method_name="artifactworld-tiny",
        steps_per_eval_image=100,
        steps_per_eval_batch=0,
        steps_per_save=100,
        steps_per_eval_all_images=100000,
        max_num_iterations=max_steps,
        mixed_precision=False,
        machine=MachineConfig(device_type="cpu"),
        pipeline=ArtifactWorldPipelineConfig(
            datamanager=ArtifactWorldDataManagerConfig(
                dataparser=NerfstudioDataParserConfig(load_3D_points=True),
                cache_images="cpu",
                cache_images_type="uint8",
            ),
            model=ArtifactWorldModelConfig(
                num_downscales=0,
                warmup_length=30,
                refine_every=30,
                reset_alpha_every=10,
                densify_grad_thresh=0.003,
                sh_degree=1,
                sh_degree_interval=100,
                num_random=5000,
                random_scale=2.0,
            ),
            restorer_preset="tiny",
            restore_fractions=(1 / 3, 2 / 3),
            clips_per_round=2,
            clip_frames=17,
        ),
        optimizers=splatfacto_optimizers(max_steps),
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
    )


artifactworld_method = MethodSpecification(
    config=artifactworld_config(),
    description="ArtifactWorld: sparse-view splatfacto repaired by a two-stage video diffusion restorer (full preset).",
)

artifactworld_tiny_method = MethodSpecification(
    config=artifactworld_tiny_config(),
    description=f"ArtifactWorld with CPU-friendly settings. {untrained_note()}",
)
