"""Running checks on lab machines: the layer between workload kinds and the machine/guest layers.

machines.py   ready snapshots and cold boots: the machines a run gets, and their filesystem setup
guest_run.py  GuestRun (phases, machines, consoles), run_guarded, WorkloadResult, RunHooks
phases.py     phase timings
"""
