"""`pmemlab watch`: run a lab plan's scenarios on each new kernel and compare with the last run."""
