"""The router: fablab directory, geo index, placement of fabrication jobs, orders and offers."""
