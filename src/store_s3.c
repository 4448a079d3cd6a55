/* store_s3.c - to be written */
