"""Every write to jobs, bids, contracts and submissions goes through a function in this package."""
