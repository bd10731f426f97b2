"""The frozen-work cache (``train.cache_frozen``): compute a frozen lower part of the encoder once.

- ``cut.py``: where the frozen part ends (``FrozenCut``), running the encoder in two halves, the
  self-check that the halves equal the whole;
- ``plan.py``: whether a run caches (the strategy's ``frozen_layers``, the task's ``fixed_inputs``,
  ``auto`` / ``true`` / ``false``), and attaching stored states to batches;
- ``building.py``: a store's key, size estimate, disk budget, build lock and the build itself;
- ``store.py``: the ragged on-disk / in-memory store and reading a batch from it;
- ``inventory.py``: where stores live, listing and clearing them (``bert-tasks cache``).
"""
