"""The ground every package stands on: atomic writes, the workspace layout, shared constants.

Imports nothing of ours (checked by ``tests/test_import_rules.py``).
"""
