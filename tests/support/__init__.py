"""The one home of the stand-ins and harnesses shared by tests/ and bench/.

Import them by their path from the repository root (`from tests.support.fake_cluster import
FakeLoginNode`): pytest puts the root on `sys.path` (`pythonpath` in pyproject.toml) and the
benchmarks run as `python -m bench.<name>` from it.
"""
