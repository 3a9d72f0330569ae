"""What every room uses: errors, files, threads, media, processes, and the declaration of a setting."""
