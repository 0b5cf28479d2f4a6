"""Running on lab hosts over SSH: the campaign executor, single runs, and the attempt run there (lab.hosts: the link)."""
