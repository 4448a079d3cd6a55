/* roller.c - to be written */
