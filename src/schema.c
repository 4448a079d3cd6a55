/* schema.c - to be written */
