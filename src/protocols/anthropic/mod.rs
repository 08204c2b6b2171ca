pub mod to_chat;
