"""A MariaDB replica on one architecture loses nothing its primary on another one wrote.

``multiarch_replication`` runs once per ordered pair of the requested architectures (primary on
``primary_arch``, replica on ``replica_arch``) with GTID replication already running.
"""


def test_replica_applies_everything(multiarch_replication):
    multiarch_replication.run_workload(rows=3000)
    multiarch_replication.wait_caught_up()
    verdict = multiarch_replication.compare()
    assert verdict.ok, verdict.message


def test_replica_survives_a_restart_mid_workload(multiarch_replication):
    multiarch_replication.run_workload(rows=3000, fault=multiarch_replication.restart_replica)
    multiarch_replication.wait_caught_up()
    verdict = multiarch_replication.compare()
    assert verdict.ok, verdict.message
