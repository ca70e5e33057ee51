"""Application checks: a REST service and MariaDB replication, run for real across architectures.

Plain library code (no pytest): the plugin's ``multiarch_rest`` and ``multiarch_replication``
fixtures are thin wrappers around :func:`rest_service` and :func:`replication_pair`.
"""

from __future__ import annotations
