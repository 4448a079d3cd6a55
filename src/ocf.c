/* ocf.c - to be written */
