"""The console commands that need neither twin's framework to start: vit-convert (convert) and vit-predict (predict)."""
