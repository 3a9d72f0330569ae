"""What every room uses: errors, files, threads, media, and the declaration of a setting."""
