"""scanctl: run the scanner locally and operate a deployed one."""
