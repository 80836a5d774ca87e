//! Host bindings of the `warden:tool` WIT package. Private to the runtime:
//! only capability modules and the invoke path use them.

wasmtime::component::bindgen!({
    path: "../../wit",
    world: "warden:tool/tool",
    exports: { default: async },
    // Effects wait for their write-ahead audit record.
    imports: {
        "warden:tool/kv.set": async,
        "warden:tool/kv.delete": async,
    },
});
