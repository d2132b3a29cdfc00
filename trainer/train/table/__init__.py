"""The item-table job (`reasonrec train-table`): settings (`config`), content features and the table's index
(`features`), the content map g on SASRec+ (`content`), the heads f (`heads`) and the job itself (`job`)."""
