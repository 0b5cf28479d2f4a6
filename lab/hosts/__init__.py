"""Remote lab hosts reached over SSH: the inventory, the connection, image pushes."""
