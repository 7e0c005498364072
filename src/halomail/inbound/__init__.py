"""Reading email: parsing MIME into :class:`~halomail.inbound.models.InboundEmail`, decoding,
sanitizing HTML, stripping quoted replies, and classifying auto-replies, bounces and loops."""
