"""nerfstudio glue for ArtifactWorld: the model, datamanager, CPU rasterizer and demo scene."""

import numpy as np
import torch

# nerfstudio 1.1.5 checkpoints hold numpy scalars (learning-rate scheduler state), and torch >= 2.6
# loads with weights_only=True, which refuses them; ns-eval/ns-export/ns-viewer/--load-dir import
# this package (through the run's config.yml) before loading, so allow exactly those types here.
torch.serialization.add_safe_globals(
    [np._core.multiarray.scalar, np.dtype, np.dtypes.Float64DType, np.dtypes.Float32DType, np.dtypes.Int64DType]
)
