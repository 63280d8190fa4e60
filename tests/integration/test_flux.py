"""FLUX (tiny-flux) through the live stack: FluxPipeline behind the text-to-image endpoint."""

from __future__ import annotations

import base64
import io

from PIL import Image


def test_flux_generates_through_the_stack(client):
    def make(seed):
        return client.images.generate(
            model="tiny-flux", prompt="a lighthouse", size="48x32", n=2, extra_body={"seed": seed}
        )

    result = make(5)
    images = [Image.open(io.BytesIO(base64.b64decode(item.b64_json))) for item in result.data]
    assert [image.size for image in images] == [(48, 32), (48, 32)]
    assert result.size == "48x32"
    assert make(5).data[0].b64_json == result.data[0].b64_json
