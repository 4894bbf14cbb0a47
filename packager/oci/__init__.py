"""The bundle as an OCI image for container users (k3s, balena, podman on the board).

``base``: the image's Debian root filesystem; ``image``: `edgepack oci` (``build_image``).
"""
