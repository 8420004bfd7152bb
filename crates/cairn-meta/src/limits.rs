//! The named limits of the metadata model (each also named in its error messages).

/// Most columns in one table (`columns_per_table_max`).
pub const COLUMNS_PER_TABLE_MAX: usize = 4096;
/// Most regions one table splits into (`regions_per_table_max`).
pub const REGIONS_PER_TABLE_MAX: usize = 1024;
/// Longest column comment, in bytes (`comment_len_max`).
pub const COMMENT_LEN_MAX: usize = 1024;
/// Longest column default value, in bytes (`default_value_len_max`).
pub const DEFAULT_VALUE_LEN_MAX: usize = 1024;
/// Most free-form options on a table or database (`options_extra_max`).
pub const OPTIONS_EXTRA_MAX: usize = 64;
/// Longest option key, in bytes (`option_key_len_max`).
pub const OPTION_KEY_LEN_MAX: usize = 128;
/// Longest option value, in bytes (`option_value_len_max`).
pub const OPTION_VALUE_LEN_MAX: usize = 4096;
/// Most values in all lists of a list partition rule (`partition_values_max`).
pub const PARTITION_VALUES_MAX: usize = 4096;
/// Longest partition bound or list value, in bytes (`literal_len_max`).
pub const LITERAL_LEN_MAX: usize = 1024;
/// Most columns in a primary key (`primary_key_columns_max`).
pub const PRIMARY_KEY_COLUMNS_MAX: usize = 64;
