"""The paper's experiments as commands (``mmt-ard experiment NAME --preset {builtin,paper}``).

:mod:`~mmt_ard.experiments.runner` holds the registry and writes an experiment's folder;
:mod:`~mmt_ard.experiments.presets` the built-in and paper settings; :mod:`~mmt_ard.experiments.store`
the shared, config-keyed distillation runs; :mod:`~mmt_ard.experiments.stats` the paired-seed
statistics; :mod:`~mmt_ard.experiments.tables`, :mod:`~mmt_ard.experiments.efficiency` and
:mod:`~mmt_ard.experiments.analyses` the experiments themselves. Their tables' cells are rendered by
:mod:`mmt_ard.tables`, the one cell format; reporting, a lower layer, imports nothing from here.
"""
