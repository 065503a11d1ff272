"""What both sides of the API share: the spec codec (`compactsim.codec.spec`) between the
Spec message and the simulator's config, and the spec reference generated from the
config's field metadata (`compactsim.codec.reference`).

Layering: this package depends on `compactsim.sim` (config only) and the generated
`compactsim.proto`; `compactsim.client` and `compactsim.server` depend on it, never on
each other.
"""
