"""The generative data flywheel (paper Sec. 3.3): the Artifact World Model, ``aw-degrade`` and ``aw-gate``.

* :mod:`.combinatorics` -- combinatorial prompting: 1 to 9 artifact types in shuffled order, seeded;
* :mod:`.world_model` -- the third adapter: training data, prompts and the base (LTX-Video 2B) of
  ``aw-train-lora --stage world-model``, and sampling a degraded clip from a clean one;
* :mod:`.cli_degrade` -- ``aw-degrade``: clean videos -> generated degraded clips in ``aw-simulate``'s layout;
* :mod:`.gate`, :mod:`.qalign`, :mod:`.cli_gate` -- ``aw-gate``: keep only the confirmed pairs;
* :mod:`.sources` -- mixing: several sources in ``aw-make-pairs``, sources sampled with weights in training.

Video in, video out: nothing here imports nerfstudio: the restorer side of the package (import-linter
contracts in ``pyproject.toml``).
"""
