//! Automatic number set-up: point each configured provider number's voice webhook at this
//! server (`gemini-phone configure`, or `AUTO_CONFIGURE_NUMBERS=true` at start-up).
