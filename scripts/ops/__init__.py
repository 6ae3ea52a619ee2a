"""skfleet-ops: the day-2 tasks for a skfleet cluster (the local stack, or VMs over SSH). See __main__.py."""
