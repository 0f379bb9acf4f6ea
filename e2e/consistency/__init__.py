"""The consistency checker: a concurrent S3 workload against a real cluster under faults, a
history of every operation, and a checker of that history (see e2e/README.md, `e2e/checker`).

Modules, in the order data flows:

* `values`: self-describing object bodies (what a read returns can be traced to one write);
* `history`: the operation records and their JSON-lines file;
* `workload`: client threads doing PUT / GET / DELETE / LIST / CopyObject / multipart;
* `nemesis`: the faults (kill -9, SIGSTOP, zone partitions, layout changes; clock skew is set
  at node start);
* `check`: the register checker over a history (pure: unit-tested in `test_check.py`);
* `run`: the command line: cluster, workload, nemesis, heal, final reads, verdict.
"""
