"""What the scripts in ``experiments/`` share (a script never imports another script).

=================  ======================================================================
module             what lives there
=================  ======================================================================
``errors``         :class:`~errors.UsageError`, bad command-line input (exit status 2)
``cli``            the argparse parser that raises it, flag-named errors, the
                   output-folder lock, ``--register``
``output``         the repository root, output paths and :func:`~output.write_json` (the
                   one JSON writer: atomic, NumPy numbers as plain numbers)
``networks``       the benchmark networks and data, their matrix products and FLOPs,
                   compiled-HLO summaries, optional frameworks (torch) and the matmul peak
``train_config``   ``train.py``'s defaults and option resolution (new run, ``--data``,
                   ``--dp``, ``--resume``): a checked configuration dict
``benchmarking``   the paired timing protocol and machine information
``plotting``       learning curves as a small SVG (no matplotlib)
``register``       running ``--register FILE.py`` files
``kfac_flags``     ``train.py``'s K-FAC options, their checks and defaults
``race``           optimizers raced to a target training cost (grids, SVG of cost vs
                   steps and seconds): ``autoencoder.py``, ``classifier_kfac.py``
``laplace_report`` MAP against its Laplace approximation (accuracy, NLL, ECE, OOD AUROC,
                   reliability SVG): ``train.py --laplace``, ``laplace.py``
``peers``          peer libraries run as baselines (kfac-jax, with its adapter for the
                   JAX this project installs): the module or the reason it is missing
``compiled``       long sweeps kept under the process's memory-mapping limit
=================  ======================================================================

Scripts run as ``python experiments/NAME.py`` find this package on ``sys.path`` (the
script's folder); tests get the same folder from ``tests/conftest.py``.
"""
