#![no_std]
//! Only a build-dependency anchor: the eBPF programs are the binary target.
