"""Compression of detectors: one room per concept, imports only downward.

======================  ==================================================================
room                    owns
======================  ==================================================================
``compat``              every touch of paddleslim 2.6 on Paddle 3 (shims, tracing)
``plots``               every plot (PNG): sensitivities, BN sparsity; numpy + matplotlib
``prune/``              the pruning graph, criteria, channel plans, costs, masks, searches
``sensitivity/``        sensitivity analysis: runner, store, fast masked evaluation
``latency/``            latency tables on a deploy target and latency-target searches
``slimming/``           network slimming: sparsity training, channel and layer pruning
``quant/``              post-training INT8 of exported models, quantization sensitivity
``report``              tables of results (one row per model: mAP, FLOPs, latency)
``pipelines/``          the workflows scripts call: one request in, one result out
======================  ==================================================================

Dependency rule (``tests/test_imports.py``): ``compat``, ``plots`` <- ``prune`` <-
{``sensitivity``, ``latency``, ``slimming``, ``quant``} <- ``report`` <- ``pipelines`` <-
scripts. The four middle rooms never import each other; only ``pipelines`` imports the
training loop.
"""
