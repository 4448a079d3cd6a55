/* store_file.c - to be written */
