"""Darkroom: an OpenAI-compatible backend for diffusion image and video generation."""
