"""End-to-end precision check of a GLM4 MoE decoder-layer stack.

A Paddle stack whose RMSNorm sites come from the registered backends runs against a float64
NumPy reference of the same stack, fed the same rounded weights and inputs. Modules:

- ``config``: layer configurations, presets and the e2e case.
- ``weights``: weights and inputs drawn from the case seed.
- ``layer_reference`` / ``layer_paddle``: the two implementations of the layer.
- ``modes``: which backend runs each norm site, and the record of what actually ran.
- ``stages``: stage traces and their metrics; ``budgets``: the layer-level budgets.
- ``runner``: one case in several modes -> rows of the ``e2e`` and ``norm_sites`` tables.
- ``command``: the ``precision-suite e2e`` subcommand.
"""
