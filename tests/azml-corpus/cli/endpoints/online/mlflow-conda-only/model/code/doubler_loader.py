"""An MLflow pyfunc model loaded through `loader_module`: predicts 2x + y."""


class _Doubler:
    def predict(self, model_input, params=None):
        return model_input["x"] * 2 + model_input["y"]


def _load_pyfunc(path):
    return _Doubler()
