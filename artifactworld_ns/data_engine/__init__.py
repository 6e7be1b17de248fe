"""The data engine (ArtifactWorld paper Sec. 3): paired training clips simulated from registered captures.

Modules: :mod:`.trajectory_filter` (Sec. 3.2, the physics-grounded smoothness filter on a capture's camera
path). The label records the engine writes are defined on the restorer side (``artifactworld_ns.restorer``'s
``ClipLabel``), which both sides read.
"""
