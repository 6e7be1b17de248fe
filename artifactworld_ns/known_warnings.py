"""Known-harmless warnings of nerfstudio 1.1.5 under torch 2.x, silenced by message and module.

Each filter names one message and the nerfstudio module that triggers it, so the same warning from any other
code still shows:

* ``torch.cuda.amp.GradScaler`` / ``custom_fwd`` / ``custom_bwd`` FutureWarnings: nerfstudio's trainer and
  activations use the deprecated spellings; nothing changes until torch removes them.
* torch's "Converting a tensor with requires_grad=True to a scalar" UserWarning: nerfstudio's writer logs the
  loss tensors with ``float()`` (a logged number, no graph is kept).
* torch's ``torch.cross`` without ``dim`` deprecation: nerfstudio's camera utilities (our own code passes ``dim``).

The activations module warns when nerfstudio imports it, before any plugin runs: ``aw-demo`` passes
:data:`PYTHONWARNINGS_IMPORT_TIME` to its ``ns-train`` for those two.
"""

from __future__ import annotations

import warnings

NERFSTUDIO = r"nerfstudio\."
PYTHONWARNINGS_IMPORT_TIME = ",".join(
    f"ignore:`torch.cuda.amp.{name}:FutureWarning:nerfstudio.field_components.activations"
    for name in ("custom_fwd", "custom_bwd")
)
"""``PYTHONWARNINGS`` entries for the FutureWarnings nerfstudio's activations module raises when it is imported."""


def quiet_known_nerfstudio_warnings() -> None:
    """Install the filters above (idempotent: ``warnings`` drops a filter that is already there)."""
    warnings.filterwarnings("ignore", message=r"`torch\.cuda\.amp\.", category=FutureWarning, module=NERFSTUDIO)
    warnings.filterwarnings(
        "ignore",
        message="Converting a tensor with requires_grad=True to a scalar",
        category=UserWarning,
        module=r"nerfstudio\.utils\.writer",
    )
    warnings.filterwarnings(
        "ignore", message="Using torch.cross without specifying the dim arg", category=UserWarning, module=NERFSTUDIO
    )
