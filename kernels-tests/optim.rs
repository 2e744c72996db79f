use crate::common::ctx;
