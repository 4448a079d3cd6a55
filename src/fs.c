/* fs.c - to be written */
