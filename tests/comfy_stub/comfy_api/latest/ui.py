"""Test double of comfy_api.latest.ui: UI outputs that remember what they were given."""


class PreviewImage:
    def __init__(self, image, animated: bool = False, cls=None, **kwargs):
        self.image, self.animated = image, animated

    def as_dict(self) -> dict:
        return {"images": [{"filename": "stub.png", "subfolder": "", "type": "temp"}] * len(self.image),
                "animated": (self.animated,)}


class PreviewText:
    def __init__(self, value: str, **kwargs):
        self.value = value

    def as_dict(self) -> dict:
        return {"text": (self.value,)}
