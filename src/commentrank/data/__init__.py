"""Stage 1, data_prep: ranked comment lists read, validated, split by post and turned into training views."""
