//! UFM REST simulator: under construction.
