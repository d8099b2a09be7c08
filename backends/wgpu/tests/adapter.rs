//! Adapter discovery: listing, selection by index and by name, and errors that list what exists.

use moetile_wgpu::adapter::{describe, instance, list_adapters, select};
use moetile_wgpu::{AdapterChoice, ContextOptions};

#[test]
fn adapters_are_listed_and_selected_by_index_or_name() {
    let options = ContextOptions::from_env().unwrap();
    let instance = instance(&options);
    let select = |adapter| {
        let options = ContextOptions {
            adapter,
            ..options.clone()
        };
        select(&instance, &options)
    };
    let adapters = list_adapters(&instance);
    if adapters.is_empty() {
        moetile_tests::skip_without_gpu(&"no adapter");
        return;
    }
    eprintln!("adapters: {}", describe(&adapters));
    let name = adapters[0].get_info().name;
    let by_index = select(AdapterChoice::Index(0)).unwrap();
    assert_eq!(by_index.get_info().name, name);
    // Name matching is a case-insensitive substring.
    let part: String = name.chars().take(4).collect::<String>().to_uppercase();
    let by_name = select(AdapterChoice::Name(part.clone())).unwrap();
    assert!(by_name.get_info().name.to_uppercase().contains(&part));
    select(AdapterChoice::Default).unwrap();

    let err = select(AdapterChoice::Index(adapters.len())).unwrap_err();
    assert!(err.to_string().contains(&name), "{err}");
    let err = select(AdapterChoice::Name("no such gpu".into())).unwrap_err();
    assert!(
        err.to_string().contains("no such gpu") && err.to_string().contains(&name),
        "{err}"
    );
}
