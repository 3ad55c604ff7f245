pub mod cloudtrail;
pub mod gateway;
pub mod mapping;
pub mod source;
pub mod pipeline;
