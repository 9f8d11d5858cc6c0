// The type every provisioned dashboard JSON must satisfy, built only from
// Grafana's own schema types (@grafana/schema, pinned to the Grafana version
// in docker-compose.yml).
//
// Grafana's `Dashboard` type is deliberately loose in three places that
// matter here: panel `options` and `targets` are `Record<string, unknown>`,
// and `panels` is a non-discriminated union, which disables TypeScript's
// excess-property check. So each panel type we use is tied to its plugin's
// generated `Options`/`FieldConfig` types through the `type` discriminant,
// and an unknown panel type, an unknown option or a wrongly typed value is a
// compile error. The schema's string enums become their literal values,
// because dashboard JSON holds "value", never `BigValueColorMode.Value`.

import type * as schema from '@grafana/schema';
import type * as barchart from '@grafana/schema/dist/esm/raw/composable/barchart/panelcfg/x/BarChartPanelCfg_types.gen';
import type * as bargauge from '@grafana/schema/dist/esm/raw/composable/bargauge/panelcfg/x/BarGaugePanelCfg_types.gen';
import type * as stat from '@grafana/schema/dist/esm/raw/composable/stat/panelcfg/x/StatPanelCfg_types.gen';
import type * as table from '@grafana/schema/dist/esm/raw/composable/table/panelcfg/x/TablePanelCfg_types.gen';
import type * as text from '@grafana/schema/dist/esm/raw/composable/text/panelcfg/x/TextPanelCfg_types.gen';
import type * as timeseries from '@grafana/schema/dist/esm/raw/composable/timeseries/panelcfg/x/TimeSeriesPanelCfg_types.gen';

/** A schema type with every string enum replaced by the union of its values. */
export type Literal<T> = T extends string
  ? `${T}`
  : T extends readonly (infer E)[]
    ? Literal<E>[]
    : T extends object
      ? { [K in keyof T]: Literal<T[K]> }
      : T;

/**
 * A raw InfluxQL query of Grafana's InfluxDB data source (the fields of
 * InfluxQuery in public/app/plugins/datasource/influxdb/types.ts that a raw
 * query uses; @grafana/schema does not export that type).
 */
export type InfluxQLTarget = Literal<schema.DataQuery> & {
  query: string;
  rawQuery: true;
  resultFormat: 'time_series' | 'table' | 'logs';
  alias?: string;
};

type NoCustomFieldConfig = Record<string, never>;

type PanelOf<Type extends string, Options, Custom = NoCustomFieldConfig> = Omit<
  Literal<schema.Panel>,
  'type' | 'options' | 'fieldConfig' | 'targets'
> & {
  type: Type;
  options: Literal<Options>;
  fieldConfig: Literal<schema.FieldConfigSource<Custom>>;
  targets?: InfluxQLTarget[];
};

export type StrictPanel =
  | PanelOf<'timeseries', timeseries.Options, timeseries.FieldConfig>
  | PanelOf<'barchart', barchart.Options, barchart.FieldConfig>
  | PanelOf<'bargauge', bargauge.Options>
  | PanelOf<'stat', stat.Options>
  | PanelOf<'table', table.Options, table.FieldConfig>
  | PanelOf<'text', text.Options>;

export type StrictRow = Omit<Literal<schema.RowPanel>, 'panels'> & {
  panels: StrictPanel[];
};

export type StrictDashboard = Omit<Literal<schema.Dashboard>, 'panels' | 'templating'> & {
  uid: string;
  title: string;
  panels: (StrictPanel | StrictRow)[];
  templating: { list: Literal<schema.VariableModel>[] };
};
